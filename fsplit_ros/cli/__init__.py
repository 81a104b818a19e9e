"""Console commands (fsplit-profile, fsplit-train, ...), each a thin argparse shell over the core."""
