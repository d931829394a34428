//! `neuronlab neurons`: language-neuron files side by side ([`compare`]) and in the official
//! codes' own formats ([`convert`]).

pub mod compare;
pub mod convert;

pub use compare::compare;
