"""Analytics: stream processors that build the customer timeline and analytical projections."""
