"""The peer of ``benchmarks/small_batch.py``: JaxMARL's SMAX step speed, in its own interpreter.

Run by ``small_batch.py --peer`` with a Python that has ``jax`` and ``jaxmarl`` (a separate venv:
jax is never a kdx dependency); imports nothing from kdx. Times ``HeuristicEnemySMAX`` (SMAX with
its built-in heuristic enemy, the setting skirmish mirrors) on each map and env count: a jitted
``vmap`` of ``env.step`` (auto-reset included), random legal actions drawn from
``get_avail_actions`` by a separate jitted function before each timed step, timing after
compilation, ``block_until_ready`` on every output. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time


def time_smax(map_name: str, num_envs: int, seconds: float, seed: int = 0) -> dict:
    import jax
    import jax.numpy as jnp
    from jaxmarl import make
    from jaxmarl.environments.smax import map_name_to_scenario

    env = make("HeuristicEnemySMAX", scenario=map_name_to_scenario(map_name))
    agents = env.agents
    reset = jax.jit(jax.vmap(env.reset))
    step = jax.jit(jax.vmap(env.step))

    @jax.jit
    def draw(key, state):
        avail = jax.vmap(env.get_avail_actions)(state)
        keys = jax.random.split(key, len(agents))
        return {a: jax.random.categorical(k, jnp.log(avail[a].astype(jnp.float32)), axis=-1)
                for a, k in zip(agents, keys)}

    key = jax.random.PRNGKey(seed)
    key, sub = jax.random.split(key)
    _, state = reset(jax.random.split(sub, num_envs))
    t0 = time.perf_counter()
    for _ in range(3):  # compile, then warm up
        key, k_act, k_step = jax.random.split(key, 3)
        out = step(jax.random.split(k_step, num_envs), state, draw(k_act, state))
        jax.block_until_ready(out)
        state = out[1]
    compile_s = time.perf_counter() - t0
    cpu = wall = 0.0
    steps = 0
    while cpu < seconds:
        key, k_act, k_step = jax.random.split(key, 3)
        actions = jax.block_until_ready(draw(k_act, state))
        step_keys = jax.block_until_ready(jax.random.split(k_step, num_envs))
        c0, w0 = time.process_time(), time.perf_counter()
        out = jax.block_until_ready(step(step_keys, state, actions))
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        state = out[1]
        steps += 1
    return {"map": map_name, "num_envs": num_envs, "steps": steps, "env_steps_per_s": steps * num_envs / cpu,
            "env_steps_per_s_wall": steps * num_envs / wall, "ms_per_step": cpu / steps * 1e3,
            "compile_and_warmup_s": compile_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--maps", default="3m,8m")
    parser.add_argument("--envs", default="16,64,256")
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args()
    import jax
    import jaxmarl

    rows = [time_smax(m, int(n), args.seconds) for m in args.maps.split(",") for n in args.envs.split(",")]
    print(json.dumps({"jax": jax.__version__, "jaxmarl": getattr(jaxmarl, "__version__", "?"),
                      "env": "HeuristicEnemySMAX", "rows": rows}))


if __name__ == "__main__":
    main()
