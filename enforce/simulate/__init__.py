"""The enforcer's simulator: replay a trace (synthetic, or derived from a `corral record`
recording) through a policy's decisions (the same enforce.engine.Engine and
enforce.safeguards.refusal as the live loop) against a model of the kernel's response,
side by side with baselines (fixed limits, the VPA recommender, an Autopilot-style moving
window), and score each run.

traces.py (demand), kernel_model.py + psi.py + parents.py (the kernel), baselines.py,
run.py (the loops), score.py (the figures), report.py (JSON and tables).
"""
