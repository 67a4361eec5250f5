"""Tools that never run at the door: bench, peer comparison, liveness eval, attacks, demo video."""
