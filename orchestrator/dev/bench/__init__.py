"""``orchestrator bench``: our speed as ratios against raw arq and raw aiohttp, measured in one run."""
