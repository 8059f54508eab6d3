"""What state is the device in?  One module per capability, each safe where the sensor is absent."""
