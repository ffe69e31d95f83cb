"""``python -m rerankd.cli``."""

from rerankd.cli.app import main

main()
