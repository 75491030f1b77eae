"""Sales channels: paid orders from an organizer's Shopify store or Wix site become portal orders."""
