package natswire

// Made is how many read chunks c allocated.
func Made(c *Conn) int { return c.made }

// Free is how many chunks c keeps for reading into again.
func Free(c *Conn) int { return len(c.free) }
