"""kdx.report"""
