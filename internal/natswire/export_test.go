package natswire

// Made is how many read chunks c allocated.
func Made(c *Conn) int { return c.made }
