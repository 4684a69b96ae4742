//! The phases a socket goes through after connecting (connect itself is
//! [`super::connect`]), one file each: relay, churn (resumes), logout_one
//! (the soak's `logout` of one session), logout (`logout_all`, all at once).

pub mod churn;
pub mod logout;
pub mod logout_one;
pub mod relay;
