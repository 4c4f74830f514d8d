"""kdx.export"""
