//! The Cello Kubernetes operator (CellApp reconciler).
