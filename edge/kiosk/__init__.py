"""The kiosk loop and its gates: liveness, texture PAD, access hours."""
