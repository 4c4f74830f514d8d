"""kdx.trainer: stage 1 (MAPPO teacher) and stage 2 (distillation into students).

Stage 1 interfaces later stages rely on:

- ``kdx.trainer.checkpoint.load_teacher(run_dir, device="cpu", env=None) -> Teacher``: the
  frozen teacher of a run (eval mode, no grads); ``KdxError`` for a missing run, missing or
  corrupt weights, or a different ``env``.
- ``Teacher`` (``kdx.trainer.teacher``): ``config``, ``spec``, ``actor``, ``critic``,
  ``value_norm``; ``forward_actor(obs [B, A, max_obs], mask?, hidden?)`` -> logits
  ``[B, A, max_actions]``, embedding ``[B, A, H]`` (last hidden layer), hidden;
  ``values(state [B, S], obs?)`` -> denormalised ``[B, A]``; ``act(...)`` -> actions.
- ``TeacherActor.agent_view(i, n_actions, obs_dim)``: one agent's actor with its id fixed,
  ``obs [B, obs_dim] -> logits [B, n_actions]`` (what ONNX export wraps).
- ``kdx.trainer.evaluate``: the ``Policy`` interface (``reset(env)``, ``act(step) -> actions``),
  ``evaluate_policies(env, {name: policy}, episodes)`` with random/oracle references on the same
  seeds, ``evaluate_run(run_dir, extra_policies=...)`` writing ``RUN/eval.json``.
- Run folder: ``RUN/teacher/{config.json, weights.safetensors, optimizer.safetensors,
  metrics.jsonl, tb/, checkpoints/NNNNNN/}`` (see ``kdx.trainer.checkpoint``).
"""
