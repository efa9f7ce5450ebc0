"""Study definitions, storage, the objective that runs one trial, reports."""
