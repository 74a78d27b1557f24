"""Training with Lightning: task module, callbacks, MLflow tracking, bundle export."""
