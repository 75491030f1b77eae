"""Marketing consent at checkout and in sales channels, and the Klaviyo list subscription it leads to."""
