"""The server plugin: ``mlflow server --app-name descope``.

An outer session layer (``gate``) authenticates every request with a Descope session (Bearer token or
``DS``/``DSR`` cookies) before MLflow sees it; MLflow's own permission system (``mlflow.server.auth``)
then decides what the verified user may do, through ``authz.authorize``, its
``authorization_function``.
"""
