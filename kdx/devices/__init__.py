"""kdx.devices"""
