"""Read models: pure reducers over domain events, their views, and the generic store."""
