"""`wordbot info DIR --plot PNG`: training loss and validation perplexity per epoch,
read from the model's training-log.csv and drawn with matplotlib (the optional extra
`plot`, imported here only)."""

from __future__ import annotations

from pathlib import Path

from wordbot.errors import WordbotError
from wordbot.training.watch import LOG_NAME, read_rows


def _series(rows: list[dict], column: str) -> dict[int, tuple[list[int], list[float]]]:
    """Per network: (epochs, values) of the rows that have `column`."""
    out: dict[int, tuple[list[int], list[float]]] = {}
    for row in rows:
        if row.get(column):
            epochs, values = out.setdefault(int(row["network"]), ([], []))
            epochs.append(int(row["epoch"]))
            values.append(float(row[column]))
    return out


def plot_curves(model_dir: Path, png: str | Path) -> Path:
    """Draw `model_dir`'s training log to `png`; returns the PNG's path."""
    log = Path(model_dir) / LOG_NAME
    try:
        rows = read_rows(log)
    except (OSError, ValueError, KeyError) as e:
        raise WordbotError(f"cannot read {log}: {e}") from None
    if not rows:
        raise WordbotError(f"{model_dir} keeps no {LOG_NAME} (models trained before it existed have none)")
    try:
        import matplotlib

        matplotlib.use("Agg")  # a file, never a window
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise WordbotError(
            "drawing curves needs matplotlib, which is not installed: pip install 'wordbot[plot]'"
        ) from None
    figure, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=100)
    for axes, column, title in (
        (left, "loss", "training loss"),
        (right, "validation_perplexity", "validation perplexity (<unk> counted)"),
    ):
        for network, (epochs, values) in sorted(_series(rows, column).items()):
            axes.plot(epochs, values, marker="o", label=f"network {network + 1}")
        axes.set_title(title)
        axes.set_xlabel("epoch (0: before fine-tuning)" if column != "loss" and _has_start(rows) else "epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    if len({row["network"] for row in rows}) > 1:
        right.legend()
    figure.suptitle(Path(model_dir).resolve().name)
    figure.tight_layout()
    try:
        figure.savefig(png, format="png")
    except OSError as e:
        raise WordbotError(f"cannot write {png}: {e.strerror or e}") from None
    finally:
        plt.close(figure)
    return Path(png)


def _has_start(rows: list[dict]) -> bool:
    return any(row["epoch"] == "0" for row in rows)
