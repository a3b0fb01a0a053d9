"""Built-in tasks whose data the project makes itself (there is no dataset hub here)."""
