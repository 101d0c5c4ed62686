-- The newest measurement time, for the stale-source guard's message (only read when the guard trips).
SELECT max({time_column}) AS newest FROM {measurements};
