"""The client-side MLflow plugins: auth (``MLFLOW_TRACKING_AUTH=descope``), headers and run tags.

All three share one process-wide session (``mlflow_descope_auth.clients.get_client_session``).
"""
