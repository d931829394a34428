//! Language-specific neurons: activation statistics, LAPE and activation-probability scoring.
//! Empty in this step; filled by the language-neurons issue.
