"""Small helpers every layer shares, each in one place: atomic writes, the JSON codec,
infinity parsing and formatting, thread limits and plotting defaults."""
