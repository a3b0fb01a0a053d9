"""The roles, one class each: rollout, reference, reward, learner.

Every role is a plain Python class, usable in-process or under torchrun;
``actors.groups`` wraps them as Ray actors and spreads work over them. This
package's modules import vLLM, Ray and transformers only where they are used.
"""

from actors.process import settle_ray_worker

settle_ray_worker()  # in a Ray worker, before any role's module imports torch or vLLM
