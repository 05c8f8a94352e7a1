-- A job's plan (jobs::plan::JobPlan as JSON): what control checked and resolved when the job was
-- created, run as is by the executor. Jobs stored before this migration have none; they get one
-- made from their stored input when they are scheduled.
ALTER TABLE jobs ADD COLUMN plan TEXT;
