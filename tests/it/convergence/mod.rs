//! The convergence rule (SPEC section 4): whatever order, duplication or redelivery the
//! broker produces, with any number of replicas and batches in flight, the table ends as
//! applying the events in timestamp order would leave it. From the plain rules through
//! the real worker to random histories with failures checked against the model.

mod faulty;
mod histories;
mod model;
mod outcomes;
mod races;
mod rules;
mod sql;
