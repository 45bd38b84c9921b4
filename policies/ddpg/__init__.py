from policies.ddpg.algorithm import DDPG, DDPGConfig

__all__ = ["DDPG", "DDPGConfig"]
