"""The README's main command: the pciehp-watch pipeline shown on the bundled real captures."""
