/* SPDX-License-Identifier: MIT */
/* tcp-audit report: connections, failures and leaks from an archive (report.c). */
#ifndef TCP_AUDIT_REPORT_H
#define TCP_AUDIT_REPORT_H

/* argv[0] is "report"; returns the exit status. */
int report_main(int argc, char **argv);

#endif
