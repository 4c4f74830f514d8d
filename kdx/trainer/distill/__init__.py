"""Stage 2: distil the frozen teacher into one small, critic-free student per agent (``kdx distill``).

``loop.distill(run_dir, DistillConfig(...))`` trains the students; ``store.load_students(run_dir)``
gives them back as ``{agent: StudentPolicy}``; ``sweep`` runs distil + evaluate over device
profiles, seeds and loss ablations.
"""
