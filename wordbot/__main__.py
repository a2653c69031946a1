from wordbot.cli import main

raise SystemExit(main())
