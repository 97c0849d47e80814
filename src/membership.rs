//! Who belongs to this service (docs/contract.md#who-belongs).

/// Staff roles belong everywhere; every other role, `student` included, belongs only where
/// the service is listed in the user's allowed services. Both comparisons ignore case.
#[derive(Debug, Clone)]
pub struct Membership {
    service: String,
    all_access_roles: Vec<String>,
}

impl Membership {
    pub fn new(service: &str, all_access_roles: &[String]) -> Self {
        Self {
            service: service.trim().to_lowercase(),
            all_access_roles: all_access_roles
                .iter()
                .map(|r| r.trim().to_lowercase())
                .filter(|r| !r.is_empty())
                .collect(),
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn belongs(&self, role: Option<&str>, allowed_services: &[String]) -> bool {
        let staff =
            role.is_some_and(|role| self.all_access_roles.contains(&role.trim().to_lowercase()));
        staff
            || allowed_services
                .iter()
                .any(|s| s.trim().to_lowercase() == self.service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Membership {
        let roles: Vec<String> = ["teacher", "curator", "admin"].map(String::from).into();
        Membership::new("lms", &roles)
    }

    fn svc(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn membership_table() {
        // (role, allowed services, belongs to lms)
        let rows: &[(Option<&str>, &[&str], bool)] = &[
            (Some("student"), &["lms", "sat"], true),
            (Some("student"), &["LMS"], true),
            (Some("student"), &["sat"], false),
            (Some("student"), &[], false),
            (Some("Student"), &["lms"], true),
            (Some("teacher"), &[], true),
            (Some("TEACHER"), &["sat"], true),
            (Some("curator"), &[], true),
            (Some("admin"), &[], true),
            (Some("Admin"), &["lms"], true),
            (Some("parent"), &[], false),
            (Some("parent"), &["lms"], true),
            (None, &[], false),
            (None, &["lms"], true),
            (Some(""), &[], false),
            (Some("student"), &["lmsx", "xlms"], false),
        ];
        for (role, services, expected) in rows {
            assert_eq!(
                m().belongs(*role, &svc(services)),
                *expected,
                "role {role:?} services {services:?}"
            );
        }
    }

    #[test]
    fn custom_all_access_roles_replace_the_default() {
        let m = Membership::new("SAT", &svc(&["Mentor"]));
        assert!(m.belongs(Some("mentor"), &[]));
        assert!(!m.belongs(Some("teacher"), &[]));
        assert!(m.belongs(Some("student"), &svc(&["sat"])));
    }
}
