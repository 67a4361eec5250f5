"""Door hardware: the relay (strike) and the door's inputs and indicators."""
