"""The door in the building's systems: MQTT, Home Assistant, remote unlock, Wiegand."""
