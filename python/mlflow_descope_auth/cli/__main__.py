from mlflow_descope_auth.cli import main

main()
