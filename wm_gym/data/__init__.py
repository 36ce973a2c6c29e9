"""Episode datasets: collection, Minari storage, training windows and video ingestion."""
