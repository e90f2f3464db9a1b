package agentclient

// TLSClients reports how many per-CA HTTP clients are cached.
func (c *Client) TLSClients() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.tls)
}
