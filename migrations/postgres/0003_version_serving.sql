-- How each version is served, from its manualScaling (worker threads), machineType (intra-op
-- threads) and acceleratorConfig (CUDA), as JSON.
ALTER TABLE versions ADD COLUMN serving TEXT NOT NULL DEFAULT '{}';
