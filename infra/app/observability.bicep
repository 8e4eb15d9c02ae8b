// What operators look at: an Azure Monitor workbook over the gateway's telemetry in the Log Analytics workspace
// (tokens per region against quota, 429s from the regions versus to clients, latency and time to first token,
// per-client usage) and two log alerts: every host of a deployment cooling down, and panic routing. The code
// exports through azure-monitor-opentelemetry into the workspace-based Application Insights: metrics land in
// AppMetrics (Name, Sum/ItemCount/Min/Max, dimensions in Properties), per-request JSON lines in AppTraces.
// The workbook's panels live in workbook.json (Notebook/1.0), readable and testable as plain JSON.
// (AVM equivalents: br/public:avm/res/insights/scheduled-query-rule, br/public:avm/res/insights/action-group.)

@description('Name of the workbook resource (a GUID).')
param workbookName string

@description('Name of the action group created when alertEmail is set.')
param actionGroupName string

@description('Azure region of the workbook and the alert rules.')
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('Resource id of the Log Analytics workspace behind Application Insights (the workbook and the alerts query it).')
param logAnalyticsWorkspaceId string

@description('E-mail address that receives the alerts; empty creates no action group (the alerts still fire in the portal).')
param alertEmail string = ''

var hasActionGroup = !empty(alertEmail)

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: workbookName
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Azure OpenAI gateway'
    category: 'workbook'
    version: 'Notebook/1.0'
    sourceId: logAnalyticsWorkspaceId
    serializedData: string(union(loadJsonContent('workbook.json'), {
      fallbackResourceIds: [
        logAnalyticsWorkspaceId
      ]
    }))
  }
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (hasActionGroup) {
  name: actionGroupName
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'aoai-gw'
    enabled: true
    emailReceivers: [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// Both rules look at one-minute bins of gauges every instance reports: a bin fires when no instance saw a host
// that could take traffic (the minimum count is what the best-placed instance had), or when any instance routed
// in panic mode. The tables exist only once telemetry arrives, so the queries are not validated at creation.
var alerts = [
  {
    name: 'every-host-cooling-down'
    displayName: 'Azure OpenAI gateway: every host of a deployment cooling down'
    description: 'For at least a minute no instance had a host of this logical deployment able to take traffic (all cooling down, ejected or unhealthy): clients get 429 or 503.'
    severity: 1
    query: 'AppMetrics\n| where Name == "gateway.hosts.available"\n| summarize Available = max(Max) by Model = tostring(Properties["gen_ai.request.model"]), bin(TimeGenerated, 1m)\n| where Available == 0'
  }
  {
    name: 'panic-routing'
    displayName: 'Azure OpenAI gateway: panic routing'
    description: 'Probes alone would exclude every host of this logical deployment, so the gateway routes to them anyway (panic mode): check /status and the regions.'
    severity: 2
    query: 'AppMetrics\n| where Name == "gateway.panic"\n| summarize Panic = max(Max) by Model = tostring(Properties["gen_ai.request.model"]), bin(TimeGenerated, 1m)\n| where Panic > 0'
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for alert in alerts: {
  name: alert.name
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: alert.displayName
    description: alert.description
    severity: alert.severity
    enabled: true
    scopes: [
      logAnalyticsWorkspaceId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    skipQueryValidation: true
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: alert.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'Model'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: hasActionGroup ? [
        actionGroup.id
      ] : []
    }
  }
}]

output workbookId string = workbook.id
