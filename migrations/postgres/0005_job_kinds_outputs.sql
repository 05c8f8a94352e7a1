-- Jobs of both kinds: `input` holds the TrainingInput or the PredictionInput (JSON) as the API
-- returns it, `kind` says which; `output` is the TrainingOutput or PredictionOutput, updated while
-- the job runs; `gpus` is how many GPU devices the job holds while it runs.
ALTER TABLE jobs RENAME COLUMN training_input TO input;
ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'TRAINING' CHECK (kind IN ('TRAINING', 'PREDICTION'));
ALTER TABLE jobs ADD COLUMN output TEXT NOT NULL DEFAULT '{}';
ALTER TABLE jobs ADD COLUMN gpus BIGINT NOT NULL DEFAULT 0;
