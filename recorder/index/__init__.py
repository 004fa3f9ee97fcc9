"""Recording index backends behind one interface."""
