"""Enrolment: photos, signed USB sticks, keys and names."""
