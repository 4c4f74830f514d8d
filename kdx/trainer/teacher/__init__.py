"""Stage 1: a MAPPO teacher with a centralised critic (``kdx train``).

Interfaces later stages rely on:

- ``kdx.trainer.teacher.store.load_teacher(run_dir, device="cpu", env=None) -> Teacher``: the
  frozen teacher of a run (eval mode, no grads); ``KdxError`` for a missing run, missing or
  corrupt weights, or a different ``env``.
- ``Teacher`` (``kdx.trainer.teacher.model``): ``config``, ``spec``, ``actor``, ``critic``,
  ``value_norm``; ``forward_actor(obs [B, A, max_obs], state [B, S], mask?, hidden?)`` -> logits
  ``[B, A, max_actions]``, embedding ``[B, A, H]`` (last hidden layer), hidden (``state`` is read
  by a centralised actor, ``teacher_input = "centralised"``, only);
  ``values(state [B, S], obs?)`` -> denormalised ``[B, A]``; ``act(obs, state, mask, ...)`` -> actions.
- ``TeacherActor.agent_view(i, n_actions, obs_dim)``: one agent's actor with its id fixed,
  ``obs [B, obs_dim] -> logits [B, n_actions]`` (what ONNX export wraps; local actors only).
"""
