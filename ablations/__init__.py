"""Ablations: tasks, grids, runner, statistics, plots and reports.

CLI: ``python -m ablations run CONFIG`` runs what is missing, then renders the report;
``python -m ablations report CONFIG|all`` only re-renders from stored runs.
"""
