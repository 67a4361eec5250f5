"""The kiosk's screen: what a person at the door sees."""
