"""kdx.envs.mpe"""
