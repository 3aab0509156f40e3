"""The engine's bounds: the tolerances: the float32 step bound, the judgement against float64, the ensemble and the free-run criterion."""
