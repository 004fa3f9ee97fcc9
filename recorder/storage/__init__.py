"""Recording storage backends behind one interface."""
