"""kdx.trainer"""
