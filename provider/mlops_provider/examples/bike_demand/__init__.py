"""examples.bike_demand: hourly bike-share demand (regression) on the UCI Bike Sharing data (ISLP's copy)."""
