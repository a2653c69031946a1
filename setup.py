"""The one packaging setting pyproject.toml cannot say alone: the code packages found
automatically (so a new subpackage such as wordbot/bot ships without anyone listing it)
plus the data folders mapped from data/ to wordbot/_data. Everything else is in
pyproject.toml."""

from setuptools import find_packages, setup

# The folders of data/ the wheel carries, each as a package of data files, so setuptools
# neither drops them nor warns "Package would be ignored". Only the bundled model: a model
# you train into data/models/ stays out of the wheel.
DATA_PACKAGES = ["wordbot._data", "wordbot._data.corpus", "wordbot._data.models.default"]

setup(packages=[*find_packages(include=["wordbot", "wordbot.*"]), *DATA_PACKAGES])
