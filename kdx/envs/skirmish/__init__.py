"""kdx.envs.skirmish"""
